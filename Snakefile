# xkdbench: `snakemake --cores all` runs the embedded default study. Another study:
#   snakemake --cores all --configfile workflows/config/smoke.yaml   (minutes; used by the tests)
#   snakemake --workflow-profile workflows/profiles/slurm --configfile workflows/config/paper.yaml
# Every rule is one `xkdbench` command; all logic lives in the Python package. The exception is by design:
# an external method's rule (workflows/rules/external/) runs its own trainer, then the suite evaluates it.
from snakemake.utils import validate

# A --configfile replaces the default study instead of being merged into it (Snakemake merges
# mappings, which would silently add the default's tasks to a smaller study).
if not workflow.overwrite_configfiles:

    configfile: "workflows/config/default.yaml"


validate(config, "workflows/schemas/config.schema.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/data.smk"
include: "workflows/rules/teacher.smk"
include: "workflows/rules/student_init.smk"
include: "workflows/rules/distill.smk"
include: "workflows/rules/external.smk"
include: "workflows/rules/evaluate.smk"
include: "workflows/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
