"""The tools that read a build: they import :mod:`shardgen.core`, never ``loaders``, and write nothing into the build."""
