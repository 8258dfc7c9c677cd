"""Long-context sample synthesis: QA sources, the composer, answer styles, the built-in corpus, Ray Data."""
