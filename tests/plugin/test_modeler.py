"""A graphical-modeler model chaining compress -> decompress, built in code and run like a saved model."""

from __future__ import annotations

import processing
import pytest
from qgis.core import (
    QgsProcessingContext,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from tests.plugin.conftest import SIZE, RecordingFeedback, read_band

pytestmark = [pytest.mark.usefixtures("sarcodec_provider"), pytest.mark.timeout(120)]


def with_defaults(child: QgsProcessingModelChildAlgorithm) -> QgsProcessingModelChildAlgorithm:
    """Fill unset parameters with their defaults, as the modeler's parameter dialog does."""
    sources = child.parameterSources()
    for param in child.algorithm().parameterDefinitions():
        if param.name() not in sources and not param.isDestination():
            child.addParameterSources(param.name(), [QgsProcessingModelChildParameterSource.fromStaticValue(
                param.defaultValue())])
    return child


def build_round_trip_model() -> QgsProcessingModelAlgorithm:
    """Model input raster -> sarcodec:compress (temporary .npz) -> sarcodec:decompress -> model output."""
    model = QgsProcessingModelAlgorithm("sar round trip", "sarcodec tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))

    compress = QgsProcessingModelChildAlgorithm("sarcodec:compress")
    compress.setChildId("compress")
    compress.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    compress.addParameterSources("QUALITY", [QgsProcessingModelChildParameterSource.fromStaticValue(2)])
    model.addChildAlgorithm(with_defaults(compress))

    decompress = QgsProcessingModelChildAlgorithm("sarcodec:decompress")
    decompress.setChildId("decompress")
    decompress.addParameterSources(
        "INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("compress", "OUTPUT")]
    )
    output = QgsProcessingModelOutput("restored", "Restored raster")
    output.setChildId("decompress")
    output.setChildOutputName("OUTPUT")
    decompress.setModelOutputs({"restored": output})
    model.addChildAlgorithm(with_defaults(decompress))
    model.updateDestinationParameters()
    return model


def test_model_chains_compress_into_decompress(scene_tif, tmp_path):
    model = build_round_trip_model()
    assert any(isinstance(p, QgsProcessingParameterRasterDestination) for p in model.destinationParameterDefinitions())
    ok, message = model.validate()
    assert ok, message
    out = tmp_path / "restored.tif"
    context = QgsProcessingContext()
    feedback = RecordingFeedback()
    results = processing.run(model, {"scene": str(scene_tif), "decompress:restored": str(out)},
                             feedback=feedback, context=context)
    assert results["decompress:restored"] == str(out)
    assert results["CHILD_RESULTS"]["compress"]["RATIO"] > 1
    assert read_band(out)[1]["shape"] == (SIZE, SIZE)
