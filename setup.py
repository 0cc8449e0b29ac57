from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
ABOUT = {}
exec((HERE / 'datadog_checks' / 'cis_docker' / '__about__.py').read_text(), ABOUT)

setup(
    name='datadog-cis-docker',
    version=ABOUT['__version__'],
    description='Datadog Agent check for CIS Docker Benchmark control 2.4: private registries must use TLS',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='BSD-3-Clause',
    keywords='datadog agent check docker cis compliance registry tls',
    classifiers=[
        'Development Status :: 4 - Beta',
        'Intended Audience :: System Administrators',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Topic :: System :: Monitoring',
    ],
    # Not `datadog_checks` itself: datadog-checks-base owns datadog_checks/__init__.py in the Agent's Python, and a
    # wheel that shipped it too would overwrite it on install and delete it when the integration is removed.
    packages=['datadog_checks.cis_docker', 'datadog_checks.cis_docker.config_models'],
    package_data={'datadog_checks.cis_docker': ['data/conf.yaml.example']},
    include_package_data=False,
    python_requires='>=3.11',
    # The Agent installs integration wheels with --no-deps: the base is already in its embedded Python and the docker
    # SDK has to be installed next to it by hand (README, "Installation"). 37.33.0 is the first base with
    # `validation.security`, which the generated config models call for the certificate path options.
    install_requires=['datadog-checks-base>=37.33.0'],
    extras_require={'deps': ['docker>=7.1.0']},
    zip_safe=False,
)
