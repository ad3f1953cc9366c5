"""Compiled kernels shared by the offline evaluation (`llm_i2i.eval`) and the online service (`llm_i2i.index`), so
that neither depends on the other."""
