from .__about__ import __version__
from .check import CisDockerCheck

__all__ = ['__version__', 'CisDockerCheck']
