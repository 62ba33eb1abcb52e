"""Stand-ins for tests and benchmarks (random-weight preprocessing networks, an in-memory contract data module, a
plain-SGD module). Never imported by the package itself; ``preprocess_standins`` needs the ``[test]`` extra (onnx)."""
