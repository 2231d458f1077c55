# The student initialisation: SFT on the warm-up split, once per task and seed, shared by every method.


rule init_student:
    input:
        data=rules.prepare_data.output,
        tokenizer=rules.train_tokenizer.output,
    output:
        f"{RESULTS}/student_init/{{task}}/seed{{seed}}/train_summary.json",
    params:
        settings=settings_hash("student_init"),
        data=f"{RESULTS}/data/{{task}}",
        tokenizer=f"{RESULTS}/tokenizer/{{task}}",
        out=f"{RESULTS}/student_init/{{task}}/seed{{seed}}",
    log:
        f"{RESULTS}/logs/init_student/{{task}}/seed{{seed}}.log",
    threads: threads("student")
    resources:
        gpu=gpus("student"),
        mem_mb=mem_mb("student"),
        runtime=runtime("student"),
    shell:
        "xkdbench init-student --config {CFG} --task {wildcards.task} --data {params.data} "
        "--tokenizer {params.tokenizer} --seed {wildcards.seed} --threads {threads} --out {params.out} > {log} 2>&1"
