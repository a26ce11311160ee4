"""
notebooks/lab.ipynb, stored without outputs, runs top to bottom in a real Jupyter kernel (nbclient, ipykernel)
at its quick scale on a small made-up corpus: every cell succeeds (the export's own cell asserts that transformers
gives our logits and our greedy tokens), and it shows each figure it promises.
"""

import os

import pytest

from helpers import ROOT, made_up_text

NOTEBOOK = os.path.join(ROOT, "notebooks", "lab.ipynb")


def test_the_notebook_is_stored_without_outputs():
    import nbformat
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(made_up_text(20_000))
    for name, value in {"LAB_QUICK": "1", "LAB_INPUT": str(corpus), "LAB_OUT": str(tmp_path / "out"),
                        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits them; PYTHONPATH: this checkout's mingpt
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()  # raises if a cell fails
    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    # two loss curves, four models' attention maps, the window's cost, the KV cache
    assert len(figures) == 2 + 4 + 1 + 1
    assert any("Mistral" in output.get("text", "") for output in outputs)
    assert (tmp_path / "out" / "llama_hf" / "model.safetensors").exists()
