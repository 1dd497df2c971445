"""`toolkit provision`: Ansible roles for the GPU stack, run through ansible-runner."""
