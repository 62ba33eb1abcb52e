"""DeepFashion In-shop (pose transfer): layout and reader, IUV codec, DensePose filling, synthetic copy,
evaluation protocol, spec."""
