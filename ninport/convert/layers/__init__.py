"""One module per Caffe layer family; each registers its converters with @converter."""
