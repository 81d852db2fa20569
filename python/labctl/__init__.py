"""labctl: virtual network labs from a JSON topology."""
from ._core import __version__

__all__ = ["__version__"]
