"""slow: echo that waits before answering.

The delay (milliseconds) comes from, in order: the file named by AUTOGLM_FAULT_FILE, the file
`fault-delay-ms` in the model's version directory (both read on every request),
AUTOGLM_FAULT_DELAY_MS, the config parameter delay_ms.
"""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = int(args["model_version"])
        params = json.loads(args["model_config"]).get("parameters", {})
        self.default_delay = float(os.environ.get("AUTOGLM_FAULT_DELAY_MS",
                                                  params.get("delay_ms", {}).get("string_value", "0")))
        self.fault_files = [f for f in (os.environ.get("AUTOGLM_FAULT_FILE"),
                                        os.path.join(args["model_repository"], args["model_version"],
                                                     "fault-delay-ms")) if f]

    def delay_ms(self):
        for fault_file in self.fault_files:
            try:
                with open(fault_file) as f:
                    return float(f.read().strip() or 0)
            except (OSError, ValueError):
                continue
        return self.default_delay

    def execute(self, requests):
        time.sleep(self.delay_ms() / 1000.0)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", (data * 2).astype(np.float32)),
                pb_utils.Tensor("VERSION", np.array([self.version], dtype=np.int32))]))
        return responses
