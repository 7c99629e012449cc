"""One router per resource: parse, recolor, model info, health/metrics, the web page."""
