# TRL's GKDTrainer as an external method: the worked example of the rule contract (xkdbench/external.py,
# README "Adding a method"). A config entry runs it beside the suite's gkd at the same settings:
#   - {name: trl_gkd, method: external, rule: trl_gkd, beta: 0.5, student_data_fraction: 1.0}
# Its settings are declared in trl_gkd.yaml; the trainer is trl_gkd.py (the `.[bench]` extra: trl).


rule trl_gkd:
    input:
        cell=f"{CELL}/inputs/cell.json",
        trainer="workflows/rules/external/trl_gkd.py",  # an edited trainer reruns its cells
    output:
        model=directory(f"{external_cell('trl_gkd')}/model"),
        summary=f"{external_cell('trl_gkd')}/train_summary.json",
    log:
        external_log("trl_gkd"),
    threads: threads("student")
    resources:
        gpu=gpus("student"),
        mem_mb=mem_mb("student"),
        runtime=runtime("student"),
    shell:
        "python {input.trainer} --cell {input.cell} --model {output.model} --summary {output.summary} "
        "--threads {threads} > {log} 2>&1"
