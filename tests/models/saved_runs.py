"""A `random:` preset saved with save_pretrained and run through `pytest --mm-model=DIR`, as a user's directory."""
import json

from mmdiag.models.load import save_preset


def run_saved(pytester, preset: str) -> tuple[dict, str]:
    """(results.json, pytest's output) of the suite on ``preset`` saved to a directory: small, no bootstrap.

    Asserts what every saved-directory run must give: no traceback and exit 0 or 1 (checks ran)."""
    directory = save_preset(f"random:{preset}", pytester.path / "model")
    result = pytester.runpytest(f"--mm-model={directory}", "--mm-samples=4", "--mm-bootstrap=0",
                                "--mm-batch-size=4", "--mm-json=r.json", "-p", "no:cacheprovider", "--color=no")
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert result.ret in (0, 1), output[-3000:]
    return json.loads((pytester.path / "r.json").read_text()), output
