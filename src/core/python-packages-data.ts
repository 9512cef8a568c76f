/**
 * The Python allow-list of the guide: 60 packages in 13 categories, each mapped to its Debian
 * `python3-*` package (from shared/python-packages.tsv). `available` says whether Debian 12 ships it;
 * the set-up installs exactly those, and list_packages reports the rest as unavailable.
 */
export interface PythonPackage {
  category: string;
  name: string;
  importName: string;
  debianPackage: string | null;
  available: boolean;
}

export const PYTHON_PACKAGES: readonly PythonPackage[] = Object.freeze([
  { category: 'HTTP', name: 'requests', importName: 'requests', debianPackage: 'python3-requests', available: true },
  { category: 'HTTP', name: 'httpx', importName: 'httpx', debianPackage: 'python3-httpx', available: true },
  { category: 'HTTP', name: 'urllib3', importName: 'urllib3', debianPackage: 'python3-urllib3', available: true },
  { category: 'HTTP', name: 'aiohttp', importName: 'aiohttp', debianPackage: 'python3-aiohttp', available: true },
  { category: 'HTTP', name: 'websockets', importName: 'websockets', debianPackage: 'python3-websockets', available: true },
  { category: 'Data formats', name: 'pyyaml', importName: 'yaml', debianPackage: 'python3-yaml', available: true },
  { category: 'Data formats', name: 'orjson', importName: 'orjson', debianPackage: null, available: false },
  { category: 'Data formats', name: 'tomli', importName: 'tomli', debianPackage: 'python3-tomli', available: true },
  { category: 'Data formats', name: 'tomli-w', importName: 'tomli_w', debianPackage: 'python3-tomli-w', available: true },
  { category: 'Data formats', name: 'xmltodict', importName: 'xmltodict', debianPackage: 'python3-xmltodict', available: true },
  { category: 'Data formats', name: 'msgpack', importName: 'msgpack', debianPackage: 'python3-msgpack', available: true },
  { category: 'Validation', name: 'pydantic', importName: 'pydantic', debianPackage: 'python3-pydantic', available: true },
  { category: 'Validation', name: 'attrs', importName: 'attrs', debianPackage: 'python3-attr', available: true },
  { category: 'Validation', name: 'jsonschema', importName: 'jsonschema', debianPackage: 'python3-jsonschema', available: true },
  { category: 'Text', name: 'beautifulsoup4', importName: 'bs4', debianPackage: 'python3-bs4', available: true },
  { category: 'Text', name: 'lxml', importName: 'lxml', debianPackage: 'python3-lxml', available: true },
  { category: 'Text', name: 'markdownify', importName: 'markdownify', debianPackage: null, available: false },
  { category: 'Text', name: 'markdown', importName: 'markdown', debianPackage: 'python3-markdown', available: true },
  { category: 'Text', name: 'html2text', importName: 'html2text', debianPackage: 'python3-html2text', available: true },
  { category: 'Text', name: 'chardet', importName: 'chardet', debianPackage: 'python3-chardet', available: true },
  { category: 'Text', name: 'python-slugify', importName: 'slugify', debianPackage: 'python3-slugify', available: true },
  { category: 'Text', name: 'jinja2', importName: 'jinja2', debianPackage: 'python3-jinja2', available: true },
  { category: 'Text', name: 'regex', importName: 'regex', debianPackage: 'python3-regex', available: true },
  { category: 'Datetime', name: 'python-dateutil', importName: 'dateutil', debianPackage: 'python3-dateutil', available: true },
  { category: 'Datetime', name: 'pytz', importName: 'pytz', debianPackage: 'python3-tz', available: true },
  { category: 'Datetime', name: 'arrow', importName: 'arrow', debianPackage: 'python3-arrow', available: true },
  { category: 'Data science', name: 'numpy', importName: 'numpy', debianPackage: 'python3-numpy', available: true },
  { category: 'Data science', name: 'pandas', importName: 'pandas', debianPackage: 'python3-pandas', available: true },
  { category: 'Data science', name: 'scipy', importName: 'scipy', debianPackage: 'python3-scipy', available: true },
  { category: 'Data science', name: 'scikit-learn', importName: 'sklearn', debianPackage: 'python3-sklearn', available: true },
  { category: 'Data science', name: 'sympy', importName: 'sympy', debianPackage: 'python3-sympy', available: true },
  { category: 'Data science', name: 'statsmodels', importName: 'statsmodels', debianPackage: 'python3-statsmodels', available: true },
  { category: 'Visualization', name: 'matplotlib', importName: 'matplotlib', debianPackage: 'python3-matplotlib', available: true },
  { category: 'Visualization', name: 'pillow', importName: 'PIL', debianPackage: 'python3-pil', available: true },
  { category: 'AI', name: 'openai', importName: 'openai', debianPackage: null, available: false },
  { category: 'AI', name: 'anthropic', importName: 'anthropic', debianPackage: null, available: false },
  { category: 'AI', name: 'tiktoken', importName: 'tiktoken', debianPackage: null, available: false },
  { category: 'AI', name: 'cohere', importName: 'cohere', debianPackage: null, available: false },
  { category: 'Cloud', name: 'boto3', importName: 'boto3', debianPackage: 'python3-boto3', available: true },
  { category: 'Cloud', name: 'stripe', importName: 'stripe', debianPackage: 'python3-stripe', available: true },
  { category: 'Cloud', name: 'sendgrid', importName: 'sendgrid', debianPackage: null, available: false },
  { category: 'Cloud', name: 'twilio', importName: 'twilio', debianPackage: 'python3-twilio', available: true },
  { category: 'Cloud', name: 'google-cloud-storage', importName: 'google.cloud.storage', debianPackage: null, available: false },
  { category: 'File formats', name: 'openpyxl', importName: 'openpyxl', debianPackage: 'python3-openpyxl', available: true },
  { category: 'File formats', name: 'xlsxwriter', importName: 'xlsxwriter', debianPackage: 'python3-xlsxwriter', available: true },
  { category: 'File formats', name: 'tabulate', importName: 'tabulate', debianPackage: 'python3-tabulate', available: true },
  { category: 'File formats', name: 'feedparser', importName: 'feedparser', debianPackage: 'python3-feedparser', available: true },
  { category: 'File formats', name: 'python-docx', importName: 'docx', debianPackage: 'python3-docx', available: true },
  { category: 'File formats', name: 'pypdf', importName: 'pypdf', debianPackage: 'python3-pypdf', available: true },
  { category: 'Security', name: 'cryptography', importName: 'cryptography', debianPackage: 'python3-cryptography', available: true },
  { category: 'Security', name: 'pyjwt', importName: 'jwt', debianPackage: 'python3-jwt', available: true },
  { category: 'Security', name: 'bcrypt', importName: 'bcrypt', debianPackage: 'python3-bcrypt', available: true },
  { category: 'Database', name: 'psycopg2-binary', importName: 'psycopg2', debianPackage: 'python3-psycopg2', available: true },
  { category: 'Database', name: 'pymongo', importName: 'pymongo', debianPackage: 'python3-pymongo', available: true },
  { category: 'Database', name: 'redis', importName: 'redis', debianPackage: 'python3-redis', available: true },
  { category: 'Utilities', name: 'humanize', importName: 'humanize', debianPackage: 'python3-humanize', available: true },
  { category: 'Utilities', name: 'tqdm', importName: 'tqdm', debianPackage: 'python3-tqdm', available: true },
  { category: 'Utilities', name: 'rich', importName: 'rich', debianPackage: 'python3-rich', available: true },
  {
    category: 'Utilities',
    name: 'typing-extensions',
    importName: 'typing_extensions',
    debianPackage: 'python3-typing-extensions',
    available: true,
  },
]);
