"""NetSpec -> torch.fx.GraphModule: the graph builder, the converter's context, the size guard, the description."""
