# Methods as rules (README "Adding a method", xkdbench/external.py). A variant with `method: external`
# is trained by the Snakemake rule its entry names, one job per cell, from the inputs `cell-inputs`
# writes for the cell; the suite then evaluates the model the rule wrote exactly as a distill job
# evaluates its student, and the cell enters every table, figure, claim and the cost table.
# Every .smk file in workflows/rules/external/ is included here (the rule beside its <rule>.yaml).
EXTERNAL = {name: plan for name, plan in PLAN.items() if plan["method"] == "external"}
CELL = f"{RESULTS}/cells/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}"  # one cell's directory


def external_cell(rule_name=None):
    """CELL with the method wildcard limited to the variants trained by rule `rule_name` (None: every
    external variant), for a rule's outputs: the in-house distill rule never claims these cells."""
    names = [n for n, p in EXTERNAL.items() if rule_name is None or p["rule"] == rule_name]
    return f"{RESULTS}/cells/{{task}}/{{method,{variant_pattern(names)}}}/f{{fraction}}/seed{{seed}}"


def external_log(rule_name):
    return f"{RESULTS}/logs/{rule_name}/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}.log"


def cell_inputs_inputs(wildcards):
    inputs = {
        "data": rules.prepare_data.output[0].format(task=wildcards.task),
        "tokenizer": rules.train_tokenizer.output[0].format(task=wildcards.task),
        "teacher": rules.train_teacher.output[0].format(task=wildcards.task),
        "student": rules.init_student.output[0].format(task=wildcards.task, seed=wildcards.seed),
    }
    if PLAN[wildcards.method]["uses_teacher_outputs"]:
        inputs["teacher_outputs"] = rules.teacher_outputs.output[0].format(task=wildcards.task)
    return inputs


rule cell_inputs:
    """What an external rule trains from: paths, settings, budget, the cell's examples and their order."""
    input:
        unpack(cell_inputs_inputs),
    output:
        f"{external_cell()}/inputs/cell.json",
    params:
        settings=settings_hash("cell"),
        data=f"{RESULTS}/data/{{task}}",
        tokenizer=f"{RESULTS}/tokenizer/{{task}}",
        teacher=f"{RESULTS}/teacher/{{task}}/model",
        student=f"{RESULTS}/student_init/{{task}}/seed{{seed}}/model",
        teacher_outputs=teacher_outputs_flag,
        out=f"{CELL}/inputs",
    log:
        f"{RESULTS}/logs/cell_inputs/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}.log",
    threads: 1
    resources:
        mem_mb=mem_mb("data"),
        runtime=runtime("data"),
    shell:
        "xkdbench cell-inputs --config {CFG} --task {wildcards.task} --method {wildcards.method} "
        "--fraction {wildcards.fraction} --seed {wildcards.seed} --data {params.data} --tokenizer {params.tokenizer} "
        "--teacher {params.teacher} --student {params.student} {params.teacher_outputs} --out {params.out} > {log} 2>&1"


rule evaluate_external:
    """The contract's check (a model directory that loads, a train_summary.json with the budget's steps),
    then the same evaluation as an in-house cell's."""
    input:
        data=rules.prepare_data.output,
        model=f"{CELL}/model",
        summary=f"{CELL}/train_summary.json",
    output:
        f"{external_cell()}/eval/metrics.json",
    params:
        data=f"{RESULTS}/data/{{task}}",
        out=f"{CELL}/eval",
    log:
        f"{RESULTS}/logs/evaluate/external/{{task}}/{{method}}/f{{fraction}}/seed{{seed}}.log",
    threads: threads("evaluate")
    resources:
        gpu=gpus("evaluate"),
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
    shell:
        "xkdbench evaluate --config {CFG} --task {wildcards.task} --method {wildcards.method} "
        "--fraction {wildcards.fraction} --data {params.data} --checkpoint {input.model} --seed {wildcards.seed} "
        "--threads {threads} --out {params.out} > {log} 2>&1"


for _rules_file in sorted(Path(workflow.basedir, "workflows/rules/external").glob("*.smk")):

    include: _rules_file


# Each external variant's rule must exist and write the contract's two outputs.
for _i, _entry in enumerate(config["methods"]):
    if _entry["name"] not in EXTERNAL:
        continue
    _where = f"config.methods[{_i}].rule"
    if not workflow.is_rule(_entry["rule"]):
        raise WorkflowError(f"{_where}: {_entry['rule']!r} is declared but no rule of that name is defined; "
                            "define it in workflows/rules/external/<rule>.smk (README, \"Adding a method\")")
    _outputs = set(workflow.get_rule(_entry["rule"]).output.keys())
    if not {"model", "summary"} <= _outputs:
        raise WorkflowError(f"{_where}: rule {_entry['rule']!r} must name its outputs model (the model directory) "
                            f"and summary (train_summary.json); it names {sorted(_outputs) or 'none'}")
