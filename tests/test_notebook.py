"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel of this interpreter."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def _outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_quickstart_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    # A kernelspec of our own, so the kernel is this interpreter (with svb_spark installed)
    # rather than whatever "python3" the Jupyter paths on this machine point at.
    kernels = tmp_path / "kernels"
    write_kernel_spec(str(kernels / "svb-spark-test"))
    spec = json.loads((kernels / "svb-spark-test" / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    manager = KernelManager(
        kernel_name="svb-spark-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
    )

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        km=manager,
        timeout=600,
        # Spark and the kernel start in a scratch directory: nothing lands in the repository.
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    text = _outputs_text(notebook)
    match = re.search(r"test accuracy: ([0-9.]+)", text)
    assert match, text[-3000:]
    assert float(match.group(1)) > 0.9
    assert "same coefficients: True" in text
    images = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 3  # loss per epoch, bytes per step, confusion matrix
