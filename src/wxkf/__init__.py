"""wxkf: AI customer service for WeChat Customer Service (微信客服) on WeCom."""

__version__ = "0.1.0"
