"""DressCode: layout and reader, DensePose codec, layout writer, synthetic copy, spec."""
