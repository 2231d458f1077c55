# Evaluation of the reference models: the teacher and each student initialisation (the reference
# rows of every table). Distilled cells are evaluated inside their distill job.


rule evaluate_teacher:
    """The teacher is evaluated like any cell (seed 0): the reference row of every table."""
    input:
        data=rules.prepare_data.output,
        model=rules.train_teacher.output,
    output:
        f"{RESULTS}/teacher/{{task}}/eval/metrics.json",
    params:
        settings=settings_hash("evaluate"),
        data=f"{RESULTS}/data/{{task}}",
        checkpoint=f"{RESULTS}/teacher/{{task}}/model",
        out=f"{RESULTS}/teacher/{{task}}/eval",
    log:
        f"{RESULTS}/logs/evaluate/teacher/{{task}}.log",
    threads: threads("evaluate")
    resources:
        gpu=gpus("evaluate"),
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
    shell:
        "xkdbench evaluate --config {CFG} --task {wildcards.task} --data {params.data} "
        "--checkpoint {params.checkpoint} --seed 0 --threads {threads} --out {params.out} > {log} 2>&1"


rule evaluate_student_init:
    """Each student initialisation (SFT on the warm-up split): where every method starts from."""
    input:
        data=rules.prepare_data.output,
        model=rules.init_student.output,
    output:
        f"{RESULTS}/student_init/{{task}}/seed{{seed}}/eval/metrics.json",
    params:
        settings=settings_hash("evaluate"),
        data=f"{RESULTS}/data/{{task}}",
        checkpoint=f"{RESULTS}/student_init/{{task}}/seed{{seed}}/model",
        out=f"{RESULTS}/student_init/{{task}}/seed{{seed}}/eval",
    log:
        f"{RESULTS}/logs/evaluate/student_init/{{task}}/seed{{seed}}.log",
    threads: threads("evaluate")
    resources:
        gpu=gpus("evaluate"),
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
    shell:
        "xkdbench evaluate --config {CFG} --task {wildcards.task} --data {params.data} "
        "--checkpoint {params.checkpoint} --seed {wildcards.seed} --threads {threads} --out {params.out} > {log} 2>&1"
