"""POST /infill: llama-server's fill-in-the-middle endpoint, as llama.vim and llama.vscode
call it (their default endpoint is ``http://127.0.0.1:8012/infill``)."""
