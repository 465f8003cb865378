"""The flowified layers of the paper: Linear, convolutions, residual connections (DESIGN.md §2)."""
