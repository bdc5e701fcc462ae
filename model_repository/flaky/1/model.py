"""flaky: echo that fails a fraction of requests (counted by Triton as request failures).

The error rate comes from, in order: the file named by AUTOGLM_FAULT_FILE, the file
`fault-error-rate` in the model's version directory (both read on every request, so a test can
make a running model start failing: the second reaches a Triton container through its model
store), the environment variable AUTOGLM_FAULT_ERROR_RATE, the config parameter error_rate.

A slow model: while the file `fault-latency-ms` in the version directory holds a number, every
request waits that many milliseconds first (a canary whose p99 latency rises).

A second fault answers every request with an error inside its response (pb_utils.InferenceResponse
with an error) while the file `fault-response-error` exists in the version directory: Triton counts
those requests as successes (nv_inference_request_success), so only a client, or a probe, sees them.
"""

import json
import os
import random
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = int(args["model_version"])
        params = json.loads(args["model_config"]).get("parameters", {})
        self.default_rate = float(os.environ.get("AUTOGLM_FAULT_ERROR_RATE",
                                                 params.get("error_rate", {}).get("string_value", "0")))
        self.fault_files = [f for f in (os.environ.get("AUTOGLM_FAULT_FILE"),
                                        os.path.join(args["model_repository"], args["model_version"],
                                                     "fault-error-rate")) if f]
        self.response_error_file = os.path.join(args["model_repository"], args["model_version"],
                                                "fault-response-error")
        self.latency_file = os.path.join(args["model_repository"], args["model_version"], "fault-latency-ms")

    def error_rate(self):
        for fault_file in self.fault_files:
            try:
                with open(fault_file) as f:
                    return float(f.read().strip() or 0)
            except (OSError, ValueError):
                continue
        return self.default_rate

    def latency_seconds(self):
        try:
            with open(self.latency_file) as f:
                return float(f.read().strip() or 0) / 1000
        except (OSError, ValueError):
            return 0.0

    def execute(self, requests):
        delay = self.latency_seconds()
        if delay > 0:
            time.sleep(delay)
        rate = self.error_rate()
        if any(random.random() < rate for _ in requests):
            # Raising (rather than an error response) makes Triton count the request in
            # nv_inference_request_failure, as a crashing backend would.
            raise pb_utils.TritonModelException(f"injected failure (error rate {rate})")
        if os.path.exists(self.response_error_file):
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("injected error inside the response"))
                    for _ in requests]
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", (data * 2).astype(np.float32)),
                pb_utils.Tensor("VERSION", np.array([self.version], dtype=np.int32))]))
        return responses
