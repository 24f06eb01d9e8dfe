"""moto_server, with SageMaker's UpdateModelPackage as SageMaker documents it.

    python infra/moto_server.py -H 127.0.0.1 -p PORT     (what scripts/emulators.sh starts)

moto 5.2.5's UpdateModelPackage replaces a package's CustomerMetadataProperties with the
request's map (and fails with a 500 when only CustomerMetadataPropertiesToRemove is sent), and
clears ModelApprovalStatus and ApprovalDescription when the request omits them. SageMaker
keeps what a request omits: the properties sent are added or replaced, the ones named in
CustomerMetadataPropertiesToRemove are removed, the rest stay (that is what a "to remove"
list is for), and an absent status or description is unchanged. The SageMaker model registry
backend (models/src/registry/sagemaker.rs, docs/decisions/091) sends only what it changes, so
it is tested against these semantics; everything else is moto's own. Nothing here is used
outside the emulator.
"""

import sys

from moto.sagemaker import models as sagemaker
from moto.server import main

_update = sagemaker.SageMakerModelBackend.update_model_package


def update_model_package(
    self,
    model_package_arn,
    model_approval_status,
    approval_description,
    customer_metadata_properties,
    customer_metadata_properties_to_remove,
    additional_inference_specifications_to_add,
):
    name = self.model_package_name_mapping.get(model_package_arn, model_package_arn)
    package = self.model_packages.get(name)
    if package is not None:
        merged = dict(package.customer_metadata_properties or {})
        merged.update(customer_metadata_properties or {})
        customer_metadata_properties = merged
        if model_approval_status is None:
            model_approval_status = package.model_approval_status
        if approval_description is None:
            approval_description = package.approval_description
    return _update(
        self,
        model_package_arn,
        model_approval_status,
        approval_description,
        customer_metadata_properties,
        customer_metadata_properties_to_remove or [],
        additional_inference_specifications_to_add,
    )


sagemaker.SageMakerModelBackend.update_model_package = update_model_package

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
