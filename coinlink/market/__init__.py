"""Market data: providers, the tick pipeline, tickers and candles."""
