"""wstrio: a Trio WebSocket gateway.

It terminates WebSockets and tunnels their payload to TCP, unix-socket or
spawned backends (lighttpd's mod_wstunnel), serves static files, and is run
as ``wstrio serve config.toml``, embedded with :func:`serve`, or used in tests
through the :mod:`wstrio.testing` pytest plugin.
"""

from wstrio._config import Backend as Backend
from wstrio._config import ListenAddress as ListenAddress
from wstrio._config import MetricsConfig as MetricsConfig
from wstrio._config import Route as Route
from wstrio._config import ServerConfig as ServerConfig
from wstrio._config import TlsConfig as TlsConfig
from wstrio._errors import BackendError as BackendError
from wstrio._errors import BackendExited as BackendExited
from wstrio._errors import BackendUnavailable as BackendUnavailable
from wstrio._errors import BadRequest as BadRequest
from wstrio._errors import ConfigError as ConfigError
from wstrio._errors import HandshakeRejected as HandshakeRejected
from wstrio._errors import HttpError as HttpError
from wstrio._errors import WstrioError as WstrioError
from wstrio._io.backends.connect import BackendConnector as BackendConnector
from wstrio._io.server import ReloadReport as ReloadReport
from wstrio._io.server import Server as Server
from wstrio._io.server import open_listeners as open_listeners
from wstrio._io.server import serve as serve
from wstrio._io.server import serve_listeners as serve_listeners
from wstrio._sansio.backends.address import BackendAddress as BackendAddress
from wstrio._sansio.config.loader import config_from_mapping as config_from_mapping
from wstrio._sansio.config.loader import load_config as load_config
from wstrio._sansio.http.request import Request as Request
from wstrio._sansio.metrics import BackendStatistics as BackendStatistics
from wstrio._sansio.metrics import RouteCounters as RouteCounters
from wstrio._sansio.metrics import RouteStatistics as RouteStatistics
from wstrio._sansio.metrics import ServerStatistics as ServerStatistics
from wstrio._version import __version__ as __version__
