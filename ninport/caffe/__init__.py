"""Reading Caffe files. Nothing in this package imports torch."""
