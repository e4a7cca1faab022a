"""progvid."""
