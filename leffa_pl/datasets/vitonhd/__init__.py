"""VITON-HD (``zalando-hd-resized``): layout and reader, DensePose codec, layout writer, synthetic copy, spec."""
