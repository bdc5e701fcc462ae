"""echo: OUTPUT0 = INPUT0 * 2, and VERSION says which version (track) answered."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = int(args["model_version"])

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", (data * 2).astype(np.float32)),
                pb_utils.Tensor("VERSION", np.array([self.version], dtype=np.int32))]))
        return responses
