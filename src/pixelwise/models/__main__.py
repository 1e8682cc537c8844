"""``python -m pixelwise.models``: print the model table (name, backbone, stride, parameters)."""

from pixelwise.models.summary import describe_models

if __name__ == "__main__":
    print(describe_models())
