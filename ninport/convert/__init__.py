"""NetSpec -> torch.fx.GraphModule. Knows nothing of the CLI."""
