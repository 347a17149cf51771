"""wstrio: a Trio WebSocket gateway.

It terminates WebSockets and tunnels their payload to TCP, unix-socket or
spawned backends (lighttpd's mod_wstunnel), serves static files, and is run
as ``wstrio serve config.toml``, embedded with :func:`serve`, or used in tests
through the :mod:`wstrio.testing` pytest plugin.
"""

from ._config import Backend as Backend
from ._config import ListenAddress as ListenAddress
from ._config import Route as Route
from ._config import ServerConfig as ServerConfig
from ._config import TlsConfig as TlsConfig
from ._errors import BackendError as BackendError
from ._errors import BackendExited as BackendExited
from ._errors import BackendUnavailable as BackendUnavailable
from ._errors import ConfigError as ConfigError
from ._errors import HandshakeRejected as HandshakeRejected
from ._errors import MessageTooBig as MessageTooBig
from ._errors import PolicyViolation as PolicyViolation
from ._errors import WstrioError as WstrioError
from ._io.backends import BackendConnector as BackendConnector
from ._io.server import Server as Server
from ._io.server import ServerStatistics as ServerStatistics
from ._io.server import open_listeners as open_listeners
from ._io.server import serve as serve
from ._io.server import serve_listeners as serve_listeners
from ._io.spawn import ProcessAddress as ProcessAddress
from ._sansio.config_loader import config_from_mapping as config_from_mapping
from ._sansio.config_loader import load_config as load_config
from ._sansio.request import Request as Request
from ._version import __version__ as __version__
