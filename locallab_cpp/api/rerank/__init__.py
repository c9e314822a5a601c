"""POST /v1/rerank and /rerank (with llama-server's /v1/reranking and /reranking): the
Jina / Cohere rerank shape that Open WebUI, Continue and llama-server speak."""
