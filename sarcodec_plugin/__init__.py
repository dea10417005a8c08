"""QGIS entry point of the sarcodec plugin: QGIS calls ``classFactory`` when it loads the plugin.

Nothing here imports torch: the provider must load (and explain what is missing) even where the
engine's dependencies are not installed. Importing the package only makes the bundled or configured
engine folders importable (see ``environment``).
"""

from .environment import add_dependency_paths

__version__ = "0.1.0"

add_dependency_paths()


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    """Called by QGIS (desktop and qgis_process) with its interface object (None when headless)."""
    from .plugin import SarcodecPlugin

    return SarcodecPlugin(iface)
