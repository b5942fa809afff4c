"""HAFormer, step by step: the package behind the book."""
