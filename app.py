"""Hugging Face Space entry point: the page of `sr3infer demo` (https://huggingface.co/docs/hub/spaces-sdks-gradio).

Runs as is from the repository root (`python app.py`); Gradio's environment variables (GRADIO_SERVER_NAME,
GRADIO_SERVER_PORT, which a Space sets) pick the address, and without them it serves 127.0.0.1:7860.
"""

from sr3infer.demo import serve

if __name__ == "__main__":
    serve(host=None, port=None)
