"""QGIS entry point of the sarcodec plugin: QGIS calls ``classFactory`` when it loads the plugin.

Nothing here imports torch: the provider must load (and explain what is missing) even where the
engine's dependencies are not installed.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .plugin import SarcodecPlugin

    return SarcodecPlugin(iface)
