"""Data for training correctors and scorers: typed records, format loaders, corpus builders."""
