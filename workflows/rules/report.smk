# Aggregation: every metrics.json -> the tidy table, the paper's tables and figures.

CELL_METRICS = [
    f"{RESULTS}/cells/{c['task']}/{c['method']}/f{c['fraction']}/seed{c['seed']}/eval/metrics.json" for c in CELLS
]
REFERENCE_METRICS = expand(f"{RESULTS}/teacher/{{task}}/eval/metrics.json", task=TASKS) + [
    f"{RESULTS}/student_init/{task}/seed{seed}/eval/metrics.json" for task in TASKS for seed in TASK_SEEDS[task]
]


rule report:
    input:
        CELL_METRICS + REFERENCE_METRICS,
    output:
        tidy=report(f"{FIGURES}/all_cells.csv", category="Tables", labels={"table": "all cells (tidy)"}),
        main=report(f"{FIGURES}/main_table.md", category="Tables", labels={"table": "main table"}),
        cost=report(f"{FIGURES}/cost.md", category="Tables", labels={"table": "cost"}),
        claims=report(f"{FIGURES}/claims.md", category="Tables", labels={"table": "claims of the source papers"}),
        # what the study still lacks: cells not yet run, or recorded as diverged
        missing=report(f"{FIGURES}/missing_cells.txt", category="Tables", labels={"table": "missing or failed cells"}),
        figures=report(
            directory(f"{FIGURES}/figures"),
            patterns=["{name}.png"],
            category="Figures",
            labels={"figure": "{name}"},
        ),
        # The main command's target. The published tables under paper_figures/ are committed, so on a
        # fresh clone they exist and look up to date; this marker in the git-ignored results/ does not,
        # so `snakemake --cores all` runs the whole study and then regenerates the published files.
        done=touch(f"{RESULTS}/report.done"),
    params:
        settings=FINGERPRINTS["report"],
        results=RESULTS,
        out=FIGURES,
    log:
        f"{RESULTS}/logs/report.log",
    threads: 1
    shell:
        "xkdbench report --config {CFG} --results {params.results} --out {params.out} > {log} 2>&1"
