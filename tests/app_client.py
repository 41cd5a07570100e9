"""Calls the running demo's ``/look`` endpoint with gradio_client and prints the answer as JSON.

Run as a separate process by tests/test_app.py: importing gradio_client (httpx) into the test process
changes how jsonargparse later parses train.py's ``--trainer.limit_train_batches 1`` (1 → 1.0).
"""
import json
import sys

from gradio_client import Client, handle_file


def main(url: str, image: str, phrases: str, method: str) -> None:
    client = Client(url, verbose=False)
    try:
        picture, gallery, table = client.predict(handle_file(image), phrases, method, api_name="/look")
    except Exception as error:  # the app's gr.Error arrives as an AppError carrying its message
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return
    print(json.dumps({"overlay": picture, "gallery": gallery, "table": table}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
