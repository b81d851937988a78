"""Semantic IDs: residual quantization of item embeddings into unique code tuples.

Modules: quantizer (shared base, save/load), rqkmeans, rqvae, collisions (Sinkhorn + extra
level), metrics, trie, tokens (``<a_12><b_80>`` strings), token_keywords, assign (new items),
stage (``run_sids``). Nothing is imported here, so ``import raygen.sid`` stays cheap.
"""
