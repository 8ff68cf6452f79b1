"""Run one no-magic script the way a user does and save what its main() returned.

    python tests/run_script.py foundational/microgpt.py results.json ["{'NUM_STEPS': 200}"]

The script is imported (not run as __main__), its main() is called with the default settings
a user gets, or with the module constants the optional third argument sets (a Python dict
literal), and the returned dict of measurements is written as JSON to the given path. The
full-run tests assert the spec's criteria on that file, so what is checked is what this very
run measured, never a pass flag the script printed about itself.
"""
import ast
import importlib.util
import json
import os
import sys


def run(script_path, output_path, settings=None):
    script_path = os.path.abspath(script_path)
    sys.argv = [script_path]
    sys.path.insert(0, os.path.dirname(script_path))  # as `python script.py` would
    spec = importlib.util.spec_from_file_location("nomagic_script", script_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for constant, value in (settings or {}).items():
        if not hasattr(module, constant):
            sys.exit(f"{script_path} has no module constant {constant}")
        setattr(module, constant, value)
    results = module.main()
    with open(output_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python tests/run_script.py SCRIPT OUTPUT_JSON [SETTINGS_DICT]")
    run(sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3]) if len(sys.argv) == 4 else None)
