"""The provider, its parameters and metadata.txt: declared once, documented, and matching the CLI's defaults."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterRasterDestination,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("sarcodec_provider")

ADVANCED = {
    "sarcodec:compress": {"TILE_SIZE", "OVERLAP", "DEVICE", "BATCH_SIZE", "MODEL", "ESTIMATE_QUALITY"},
    "sarcodec:decompress": {"OVERLAP", "DEVICE", "BATCH_SIZE", "MODEL", "SALVAGE"},
    "sarcodec:infer": {"SCALE", "RANGE", "TILE_SIZE", "OVERLAP", "DEVICE", "BATCH_SIZE", "TRUST_TORCHSCRIPT",
                       "OUTPUT_DTYPE"},
}


def algorithm(alg_id: str):
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    assert alg is not None, alg_id
    return alg


def test_provider_identity(sarcodec_provider):
    assert sarcodec_provider.id() == "sarcodec" and sarcodec_provider.name() == "SAR codec"
    assert not sarcodec_provider.icon().isNull()
    assert sorted(a.id() for a in sarcodec_provider.algorithms()) == [
        "sarcodec:compress", "sarcodec:decompress", "sarcodec:infer", "sarcodec:info"]


@pytest.mark.parametrize("alg_id", ["sarcodec:compress", "sarcodec:decompress", "sarcodec:info", "sarcodec:infer"])
def test_parameters_are_documented_and_advanced_where_expected(alg_id):
    alg = algorithm(alg_id)
    assert alg.shortHelpString() and "\n" not in alg.shortHelpString()
    assert not alg.icon().isNull()
    for param in alg.parameterDefinitions():
        assert param.description(), param.name()
        is_advanced = bool(param.flags() & QgsProcessingParameterDefinition.FlagAdvanced)
        assert is_advanced == (param.name() in ADVANCED.get(alg_id, set())), param.name()


def test_defaults_match_the_engine_and_cli():
    from sarcodec.codec import model_store, pipeline

    compress, decompress = algorithm("sarcodec:compress"), algorithm("sarcodec:decompress")
    copt, dopt = pipeline.CompressOptions(), pipeline.DecompressOptions()
    quality = compress.parameterDefinition("QUALITY")
    model, _, _ = pipeline.load_model(None)
    assert quality.defaultValue() == model_store.default_quality(model) and quality.maximum() == model.n_qualities
    assert compress.parameterDefinition("TILE_SIZE").defaultValue() == copt.tile_size
    assert compress.parameterDefinition("OVERLAP").defaultValue() == copt.overlap
    assert compress.parameterDefinition("DEVICE").defaultValue() == copt.device
    assert compress.parameterDefinition("ESTIMATE_QUALITY").defaultValue() == copt.estimate_quality
    assert decompress.parameterDefinition("TIFF_COMPRESS").defaultValue() == dopt.tiff_compress
    assert decompress.parameterDefinition("COG").defaultValue() == dopt.cog
    assert decompress.parameterDefinition("OUTPUT_DTYPE").defaultValue() == "original" and dopt.output_dtype is None
    assert decompress.parameterDefinition("OVERLAP").defaultValue() == -1 and dopt.overlap is None
    assert isinstance(decompress.parameterDefinition("OUTPUT"), QgsProcessingParameterRasterDestination)
    assert {o.name() for o in compress.outputDefinitions() if isinstance(o, QgsProcessingOutputNumber)} >= {
        "RATIO", "BPP", "RMSE_DB"}


def test_plugin_modules_do_not_import_torch():
    import subprocess

    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/engine']\n"
            "import sarcodec_plugin.provider, sarcodec_plugin.plugin\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('sarcodec.')))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=60,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    # only the engine's pure-Python vocabulary (the one list of choices every front end shares)
    assert out.stdout.strip() == "False False ['sarcodec.vocabulary']", out.stdout + out.stderr


def test_metadata_has_what_the_plugin_installer_needs():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    meta = parser["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository",
                "tracker", "hasProcessingProvider", "category", "icon", "tags"):
        assert meta.get(key, "").strip(), key
    assert meta["qgisMinimumVersion"] == "3.22" and meta["hasProcessingProvider"] == "yes"
    assert meta["category"] == "Raster" and (REPO / meta["icon"]).is_file()
    from sarcodec_plugin import __version__

    assert meta["version"] == __version__
