"""One module per Caffe layer family. `ninport.registry` names each type's converter here as "family:function"."""
