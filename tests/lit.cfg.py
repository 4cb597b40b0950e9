# lit configuration for quadc's golden IR and diagnostics tests.
# Substitutions: %quadc is the built driver, FileCheck comes from LLVM 19,
# %examples is the examples/ directory, %S and %t are lit's own.
import os
import lit.formats

config.name = "quadc"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".qd", ".qir", ".test"]
config.excludes = ["Inputs"]
config.test_source_root = os.path.join(config.quadc_src_root, "tests", "lit")
config.test_exec_root = os.path.join(config.quadc_obj_root, "tests", "lit")

config.substitutions.append(("%quadc", os.path.join(config.quadc_obj_root, "quadc")))
config.substitutions.append(("%examples", os.path.join(config.quadc_src_root, "examples")))
config.substitutions.append(("%data", os.path.join(config.quadc_src_root, "data")))
config.substitutions.append(("FileCheck", config.filecheck))
config.substitutions.append(("not ", os.path.join(os.path.dirname(config.filecheck), "not") + " "))
config.environment["LC_ALL"] = "C"
