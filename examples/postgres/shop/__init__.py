"""A tiny shop: users place orders. The application code the example's tests exercise."""
