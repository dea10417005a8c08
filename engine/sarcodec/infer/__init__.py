"""Any fully-convolutional model over whole scenes: ``sarcodec infer`` and ``sarcodec:infer``.

``model_file`` loads and probes a user's ONNX (or trusted TorchScript) model; ``run`` runs it through
the same tiled engine the codec uses (``sarcodec.runner.run_tiled``).
"""
