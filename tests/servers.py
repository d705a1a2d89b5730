"""Real servers on 127.0.0.1 for the remote-storage tests.

Fixtures (import them into a test module or list this module in
``pytest_plugins = ["tests.servers"]`` in a conftest):

* ``s3_server`` (session): OpenStack Swift (Debian packages) with the s3api
  and tempauth middlewares: memcached + account/container/object servers +
  proxy, rings with one replica built at start-up, everything in a temp dir on
  free loopback ports.  Falls back to moto's standalone server when Swift
  cannot be started (``AVSHARDS_TEST_S3_BACKEND=swift|moto`` forces one).
  Yields an :class:`S3Server` (endpoint_url, access_key, secret_key, region,
  backend, ``new_bucket()``, ``options()``).
* ``http_server`` (session, factory): ``http_server(directory)`` starts nginx
  (Debian package, foreground, generated config in a temp dir) serving that
  directory and returns an :class:`HttpServer` (``url``, ``port``,
  ``url_for(name)``).
* ``cutting_proxy`` (session, factory): ``cutting_proxy(port, cut_every=N)``
  starts a threaded TCP proxy in front of ``127.0.0.1:port`` that cuts each
  client connection after N bytes of response body (``mode='close'`` FIN,
  ``'reset'`` RST, ``'stall'`` stop sending to provoke a read timeout), so a
  transfer is interrupted several times.  ``refuse_after=k`` makes it close
  every connection after the first k immediately (retries exhausted).

Services come from ``scripts/install_test_services.sh``.  When a service is
missing the dependent tests are *skipped* with the reason, unless
``AVSHARDS_REQUIRE_TEST_SERVICES=1`` (then they error), which CI should set.

Every child process is started in its own session with PR_SET_PDEATHSIG
(dies with pytest), killed by pid at session end (SIGTERM, then SIGKILL after
a timeout) and by an atexit hook as a backstop.  Every wait has a timeout.
"""


from tests.cutting_proxy import CuttingProxy, cutting_proxy
from tests.server_http import HttpServer, http_server
from tests.server_s3 import S3Server, s3_server
from tests.service_procs import free_port

__all__ = ["s3_server", "http_server", "cutting_proxy", "S3Server", "HttpServer", "CuttingProxy", "free_port"]
