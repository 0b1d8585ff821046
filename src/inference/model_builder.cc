#include "inference/model_builder.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace df::inference {

Status SaveScript(const ScriptSpec& spec, const std::string& path) {
  try {
    torch::manual_seed(spec.seed);
    torch::jit::Module module("DfModel");
    for (const auto& [name, shape] : spec.params) {
      torch::Tensor value =
          std::isnan(spec.fill) ? torch::randn(shape) * 0.1 : torch::full(shape, spec.fill);
      module.register_parameter(name, value, /*is_buffer=*/false);
    }
    module.define(spec.source);
    module.save(path);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, 800);
    for (char& c : what) c = c == '\n' ? ' ' : c;
    return Internal("save " + path + ": " + what);
  }
  return Status::Ok();
}

namespace {

int64_t Features(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

}  // namespace

Status SaveMlp(const MlpSpec& spec, const std::string& path) {
  int64_t features = 0;
  std::string args, parts;
  for (size_t i = 0; i < spec.input_dims.size(); ++i) {
    features += Features(spec.input_dims[i]);
    args += ", x" + std::to_string(i) + ": Tensor";
    parts += (i ? ", x" : "x") + std::to_string(i) + ".reshape(b, -1)";
  }
  ScriptSpec script;
  script.seed = spec.seed;
  script.fill = NAN;
  script.params = {{"w1", {features, spec.hidden}},
                   {"b1", {spec.hidden}},
                   {"w2", {spec.hidden, spec.outputs}},
                   {"b2", {spec.outputs}}};
  script.source = "def forward(self" + args + ") -> Tensor:\n" +
                  "    b = x0.size(0)\n"
                  "    h = torch.cat([" +
                  parts +
                  "], 1)\n"
                  "    h = torch.relu(torch.matmul(h, self.w1) + self.b1)\n"
                  "    return torch.matmul(h, self.w2) + self.b2\n";
  return SaveScript(script, path);
}

std::string MlpConfig(const std::string& name, const MlpSpec& spec, int max_batch_size) {
  std::string text = "name: \"" + name + "\"\nplatform: \"pytorch_libtorch\"\n" +
                     "max_batch_size: " + std::to_string(max_batch_size) + "\ninput [\n";
  for (size_t i = 0; i < spec.input_dims.size(); ++i) {
    std::string dims;
    for (int64_t d : spec.input_dims[i]) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    text += std::string(i ? ",\n" : "") + "  {\n    name: \"INPUT__" + std::to_string(i) +
            "\"\n    data_type: TYPE_FP32\n    dims: [ " + dims + " ]\n  }";
  }
  text += "\n]\noutput [\n  {\n    name: \"OUTPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ " +
          std::to_string(spec.outputs) + " ]\n  }\n]\n";
  return text;
}

Status WriteFileAtomically(const std::string& path, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) return IoError("write " + tmp);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return IoError("rename " + tmp + ": " + ec.message());
  return Status::Ok();
}

}  // namespace df::inference
