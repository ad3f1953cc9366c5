"""Ray Serve applications (thin wiring over `llm_i2i` cores)."""
