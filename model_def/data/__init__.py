"""Small English text data shipped with the package: corpus, QA examples and sentiment examples."""
