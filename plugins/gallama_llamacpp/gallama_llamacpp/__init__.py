"""gallama backend plugin for llama.cpp (GGUF) through xllamacpp's in-process server."""
